# The character-level Shakespeare model for one GPU (nanoGPT's shakespeare_char settings).
# python train.py configs/shakespeare_gpu.py
out_dir = "out/shakespeare_gpu"
dataset = "shakespeare"
tokenizer = "char"

eval_interval = 250
eval_iters = 200
log_interval = 10

# 6 layers x 6 heads x 384 wide: 10.7M parameters
n_layer = 6
n_head = 6
n_embd = 384
dropout = 0.2  # the model is large for 1M characters: regularise
block_size = 256
batch_size = 64  # 64 sequences x 256 tokens = 16,384 tokens per step

learning_rate = 1e-3
max_iters = 5000
min_lr = 1e-4
warmup_iters = 100
beta2 = 0.99  # a little higher than 0.95 because the batches are small

device = "auto"  # cuda; bf16 autocast on Ampere and newer
compile = True
