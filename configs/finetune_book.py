# GPT-2 (124M) fine-tuned on a book to pick up its style: plain language modelling, train.py's loop
# started from GPT-2's weights. The last 10% of the text is held out; val perplexity is measured
# before the first step and at every evaluation.
#   python finetune.py configs/finetune_book.py --dataset=path/to/book.txt
#   python sample.py --compare checkpoints/gpt2 out/book --start "The old house" --temperature 0
task = "gen"
dataset = "book.txt"  # any UTF-8 text file
init_from = "gpt2"
out_dir = "out/book"

block_size = 256  # context in tokens (GPT-2 has 1024 positions; the rest are dropped)
batch_size = 8  # 8 x 256 = 2,048 tokens per step
# An epoch is as many tokens as the training text has: Alice in Wonderland is 44,525 GPT-2 tokens,
# 40,095 of them for training: 19.6 steps per epoch, 98 for 5 epochs (--max_iters wins when set).
epochs = 5
eval_interval = 20
eval_iters = 20

learning_rate = 5e-5
min_lr = 5e-6
warmup_iters = 10
dropout = 0.1
