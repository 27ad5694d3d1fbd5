# GPT-2 (124M) fine-tuned to tell real from fake COVID-19 posts (CONSTRAINT-2021, Patwa et al.): the
# dataset's own 6,420 / 2,140 / 2,140 train / validation / test split. The run reports texts shared
# between the splits.
#   python finetune.py configs/finetune_fakenews.py   # downloads the data and GPT-2 on first use
#   python finetune.py configs/finetune_fakenews.py --dataset=path/Constraint_Train.csv \
#       --val_dataset=path/Constraint_Val.csv --test_dataset=path/english_test_with_labels.csv
task = "cls"
dataset = "fake_news"
init_from = "gpt2"
out_dir = "out/cls-fakenews"

# Posts are 50 GPT-2 tokens on average; 99% fit in 128, the few longer ones are cut to their first
# 128.
block_size = 128  # texts are cut to this many tokens
batch_size = 32  # 6,420 / 32 = 201 steps per epoch
epochs = 3  # 603 steps
eval_interval = 100  # and at the end of each epoch
best_metric = "val_macro_f1"

learning_rate = 5e-5
warmup_iters = 50
weight_decay = 0.01
dropout = 0.1
