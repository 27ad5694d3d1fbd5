# A character-level GPT on Tiny Shakespeare, sized for a laptop CPU: val loss 1.54 in 8 minutes.
#   python train.py configs/shakespeare.py                      # the text ships in datasets/
#   python train.py configs/shakespeare.py --dataset=other.txt   # or any UTF-8 text file
# On the 2-core AVX-512 CPU (BF16) it is below val 1.55 from step 4,000 and ends at 1.544
# after 5,000 steps (best 1.538): 8 minutes, data preparation and compiling included
# (docs/results.md).
# configs/shakespeare_quick.py reaches nanoGPT's CPU result (val 1.88) in half a minute.
out_dir = "out/shakespeare"
dataset = "shakespeare"
tokenizer = "char"  # 65 characters

eval_interval = 500
eval_iters = 20  # 20 batches x 2,048 tokens: val loss to about +-0.01, in a second
log_interval = 50

# 4 layers x 4 heads x 256 wide: 3.2M parameters. Twice nanoGPT's CPU width (128): bf16 matmuls make
# the extra width cheap on a CPU that has them, and 4x256 learned more per second than 6x192 or
# 4x192.
n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0  # dropout is slow on a CPU, and 10 passes over the text only begin to overfit
block_size = 128
batch_size = 16  # 16 sequences x 128 characters = 2,048 tokens per step; 10M tokens in the run

learning_rate = 2e-3  # small models tolerate a high peak learning rate
max_iters = 5000
min_lr = 2e-4  # learning_rate / 10
warmup_iters = 100
beta2 = 0.99  # a little higher than 0.95 because each batch is small

device = "auto"
dtype = "auto"  # bf16 on CPUs that have it, else float32
compile = True  # 10-20% faster steps for ~10 s of compiling; falls back to eager if it fails
