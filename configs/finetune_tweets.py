# GPT-2 (124M) fine-tuned to classify tweet sentiment: negative / neutral / positive. Kaggle's Tweet
# Sentiment Extraction: 27,481 training and 3,534 test tweets; 10% of train (stratified) is held out
# for validation.
#   python finetune.py configs/finetune_tweets.py   # downloads the data and GPT-2 on first use
#   python finetune.py configs/finetune_tweets.py --dataset=train.csv --test_dataset=test.csv
#   python finetune.py configs/finetune_tweets.py --lora_rank=8 --learning_rate=5e-4 \
#       --out_dir=out/cls-tweets-lora
#   python sample.py --out_dir out/cls-tweets --text "This is a great product!"
task = "cls"
dataset = "tweet_sentiment"
init_from = "gpt2"
out_dir = "out/cls-tweets"

# The longest tweet is 100 GPT-2 tokens, the median 17: nothing is cut, and batches of similar
# length are padded to about their own length, not to 128.
block_size = 128  # texts are cut to this many tokens
batch_size = 32  # 24,733 training tweets / 32 = 773 steps per epoch
epochs = 3  # 2,319 steps
eval_interval = 200  # and at the end of each epoch
best_metric = "val_accuracy"

learning_rate = 5e-5  # the usual full fine-tuning rate for GPT-2 / BERT-sized models
warmup_iters = 100
weight_decay = 0.01
dropout = 0.1
