# A GPT-2-tokenizer model pretrained on a corpus of documents in about an hour on 2 cores in float32:
# the pretraining of docs/pretraining.md's learning curve. Measured on an AVX-512 CPU (float32 at 95
# GFLOP/s a core); an AVX2 laptop's float32 is about a third of that: there, --max_iters=1000 is the
# hour (this schedule was at validation loss 5.65 after 1,000 steps, and 5.17 at the end).
#   python train.py configs/pretrain_cpu.py --dataset=reviews_and_tweets.jsonl --text_column=text
#   python finetune.py --init_from=out/pretrain_cpu ...   # then fine-tune it
# Any corpus works: a folder of .txt files, a .jsonl/.csv/.tsv(.gz) with a text column, shards.
out_dir = "out/pretrain_cpu"
dataset = "corpus.jsonl"  # give yours: --dataset=...
tokenizer = "gpt2"
dtype = "float32"

# Where the FLOPs go. At GPT-2's 50,257-token vocabulary the output layer (tied to the input
# embedding) is most of a small model: 50,257 x 192 = 9.6M of this model's 12.3M parameters, and
# 6 x 9.6M = 58M of the 74M training FLOPs per token. So width is dear (every extra dimension costs
# 50,257 x 6 FLOPs a token) and depth is cheap: 6 blocks of 192 cost 1.16 s a step on 2 cores
# against 1.05 s for nanoGPT-CPU's 4 x 128, and learn much more per step. Tried (the same corpus, 2
# threads, float32, 2,048 tokens a step, equal tokens): 4 x 128 (7.2M: 1.05 s a step, loss 6.89
# after 100 steps, 6.55 after 200), 4 x 256 (16M: 1.46 s, 6.65 and 6.45), 6 x 192 (1.16 s, 6.70
# after 100): 6 x 192 learns like 4 x 256 at close to 4 x 128's cost. (A smaller vocabulary would
# cut the output layer, but then the model no longer reads GPT-2's tokens.)
n_layer = 6
n_head = 6
n_embd = 192
block_size = 128
dropout = 0.0  # under one pass over the data: nothing to regularise
batch_size = 16  # 16 x 128 = 2,048 tokens a step

# 2,900 steps x 2,048 tokens = 5.9M tokens, 0.84 of a pass over the IMDB + tweets corpus (7.07M
# training tokens); at 1.16 s a step, 56 minutes, and 7 evaluations of 18 s: about an hour (it ran
# in 90 minutes beside other work: 131 CPU-minutes, 65 of 2 cores).
max_iters = 2900
learning_rate = 1.5e-3  # small models take a high peak rate
min_lr = 1.5e-4
warmup_iters = 100
beta2 = 0.99
weight_decay = 0.1

eval_interval = 500
eval_iters = 20
log_interval = 50
