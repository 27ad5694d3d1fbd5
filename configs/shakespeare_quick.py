# A character-level GPT on Tiny Shakespeare in a minute or two: nanoGPT's CPU result (val 1.886).
#   python train.py configs/shakespeare_quick.py
# In float32 at one thread it ends at val 1.874 after 700 steps (docs/results.md). The choices, from
# sweeps of short runs on two CPUs (docs/results.md): a small model (128 wide) gets to 1.88 sooner
# than wider ones, which learn more per step but take longer per step; short windows (64
# characters) in larger batches (32) learned faster per step than 128 x 16; the peak learning rate
# is as high as stays stable; shorter schedules at higher rates end above 1.886.
out_dir = "out/shakespeare_quick"
dataset = "shakespeare"
tokenizer = "char"

eval_interval = 350  # at 0, 350 and 700
eval_iters = 20
log_interval = 50

n_layer = 4
n_head = 4
n_embd = 128  # 0.8M parameters
dropout = 0.0
block_size = 64
batch_size = 32  # 32 x 64 = 2,048 tokens per step; 1.4M tokens in the run, 1.4 passes

learning_rate = 4e-3
max_iters = 700
min_lr = 4e-4
warmup_iters = 50
beta2 = 0.99
