# A character-level GPT on Tiny Shakespeare, sized for a laptop CPU.
#   python train.py configs/shakespeare.py                            # downloads the text once
#   python train.py configs/shakespeare.py --dataset=path/to/input.txt  # or use a local copy
# On a 2-core CPU with AVX-512 BF16 it reaches a val loss of 1.63 in 5.5 minutes (README).
out_dir = "out/shakespeare"
dataset = "shakespeare"
tokenizer = "char"  # 65 characters

eval_interval = 250
eval_iters = 20  # 20 batches x 2,048 tokens: val loss to about +-0.01, in a second
log_interval = 50

# 4 layers x 4 heads x 192 wide: 1.8M parameters. Wider than nanoGPT's CPU example (128), because bf16
# matmuls make the extra width cheap on a CPU that has them.
n_layer = 4
n_head = 4
n_embd = 192
dropout = 0.0  # 2000 steps see the text about 4 times: too few to overfit, and dropout slows learning
block_size = 128
batch_size = 16  # 16 sequences x 128 characters = 2,048 tokens per step; 4.1M tokens in the run

learning_rate = 2e-3  # small models tolerate a high peak learning rate
max_iters = 2000
min_lr = 2e-4  # learning_rate / 10
warmup_iters = 100
beta2 = 0.99  # a little higher than 0.95 because each batch is small

device = "auto"
dtype = "auto"  # bf16 on CPUs that have it, else float32
