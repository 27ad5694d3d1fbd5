# A small GPT-2-tokenizer model pretrained on a corpus of documents, sized for a laptop CPU.
#   python train.py configs/pretrain_cpu.py --dataset=path/to/imdb/train.csv.gz --text_column=review
#   python finetune.py --init_from=out/pretrain_cpu ...   # then fine-tune it (docs/pretraining.md)
# Any corpus works: a folder of .txt files, a .jsonl/.csv/.tsv(.gz) with a text column, shards.
# 600 steps of 2,048 tokens (1.2M tokens): about 20 minutes on 2 cores of a CPU without native bf16
# (float32, 1.9 s a step measured alone; docs/pretraining.md), IMDB's val loss 6.01 at the end; by
# that step time, --max_iters=300 takes about 10. CPUs with AVX-512 BF16 run bf16 1.2-1.5x faster.
out_dir = "out/pretrain_cpu"
dataset = "corpus.jsonl"  # give yours: --dataset=...
tokenizer = "gpt2"

# 4 layers x 4 heads x 128 wide: 7.2M parameters, 6.4M of them GPT-2's 50,257-token embedding, which
# is also the output layer (tied): most of the compute of a model this small
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
dropout = 0.0
batch_size = 16  # 16 x 128 = 2,048 tokens a step

max_iters = 600
learning_rate = 2e-3  # small models take a high peak rate
min_lr = 2e-4
warmup_iters = 50
beta2 = 0.99
weight_decay = 0.1

eval_interval = 200
eval_iters = 10
log_interval = 20
