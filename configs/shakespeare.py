# A character-level GPT on Tiny Shakespeare, sized for a laptop CPU.
# python train.py configs/shakespeare.py --dataset=path/to/input.txt   (or leave dataset to download it)
out_dir = "out/shakespeare"
dataset = "shakespeare"
tokenizer = "char"

eval_interval = 250
eval_iters = 20
log_interval = 50

# 4 layers x 4 heads x 128 wide: 0.8M parameters
n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
block_size = 64
batch_size = 12  # 12 sequences x 64 tokens = 768 tokens per step

learning_rate = 1e-3
max_iters = 2000
lr_decay_iters = 2000
min_lr = 1e-4
warmup_iters = 100
beta2 = 0.99
device = "auto"
