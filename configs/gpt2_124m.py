# GPT-2 (124M) pretrained from scratch on FineWeb, the recipe nanoGPT, build-nanogpt and llm.c
# converged on (Radford et al. 2019's shape; GPT-3's optimizer settings, Brown et al. 2020).
#   python train.py configs/gpt2_124m.py                                   # one GPU
#   torchrun --standalone --nproc_per_node=8 train.py configs/gpt2_124m.py   # one 8-GPU node
#   several nodes: docs/pretraining.md (torchrun --nnodes, and a Slurm script)
# The data is the hub's pre-tokenized FineWeb (kjj0/fineweb10B-gpt2): on first use the validation
# shard and as many 100M-token training shards as the run needs are downloaded (20 GB for all 10B).
import os

out_dir = "out/gpt2_124m"
dataset = "fineweb10B"  # or finewebedu10B (FineWeb-Edu), or your own corpus / shard folder
tokenizer = "gpt2"

# GPT-2 small: 12 layers, 12 heads, 768 wide, 1,024 positions, 50,257 tokens: 124M parameters
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
dropout = 0.0  # one pass over 10B tokens does not overfit
bias = True

# 0.5M tokens a step (2**19 = 524,288, GPT-3's batch for its 125M model), whatever the number of
# processes: micro-batch x block x accumulation x processes. A process holds 64 sequences of 1,024
# tokens in a micro-batch (fits an 80 GB GPU in bf16; lower _per_gpu on smaller ones: the
# accumulation grows to keep the step's tokens). batch_size counts all processes together.
_processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun sets it
_per_gpu = 64
batch_size = _per_gpu * _processes
gradient_accumulation_steps = max(1, 2**19 // (batch_size * block_size))  # 8 on 1 GPU, 1 on 8

# One pass over the 10B training tokens: 10e9 / 524,288 = 19,073 steps (about 1.5 h on 8 H100s)
max_iters = 19073
learning_rate = 6e-4  # GPT-3's for 125M
min_lr = 6e-5  # the cosine ends at 10% of the peak
warmup_iters = 700  # 367M tokens, as the anchors (715)
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

eval_interval = 250
eval_iters = 20  # 20 micro-batches of 64 x 1,024: the val loss over 1.3M tokens
eval_hellaswag = 10042  # all of HellaSwag's validation split at each evaluation
log_interval = 10

device = "cuda"
dtype = "bfloat16"
compile = True  # and flash attention: model.fused_attention uses it on GPUs that have it
