"""
GPT-2, written out in one file, top to bottom.

OpenAI's GPT-2 ("Language Models are Unsupervised Multitask Learners", 2019) is the original GPT
decoder with the LayerNorms moved to the input of each sub-block ("pre-norm") and one more after the
last block. Every numeric detail matches the released model, so OpenAI's weights (hf_import.py) give
the same logits here as in https://github.com/openai/gpt-2/blob/master/src/model.py and
https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py:

    token embedding + learned absolute position embedding
    n_layer x [ x + attn(ln_1(x)) ; x + mlp(ln_2(x)) ]     (LayerNorm eps 1e-5)
    ln_f, then a linear head that shares its weight with the token embedding

Module names are GPT-2's own (transformer.wte, transformer.h.0.attn.c_attn, ...), so importing the
released weights is a name-for-name copy.
"""

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
from torch.nn import functional as F



@dataclass
class GPTConfig:
    block_size: int = 1024  # the longest context the model can see (GPT-2: 1024 learned positions)
    vocab_size: int = 50257  # GPT-2's BPE: 50,000 merges + 256 byte tokens + <|endoftext|>
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms, as GPT-2 has them
    n_classes: int = 0  # > 0: a GPTClassifier with this many classes; 0: a language model (GPT)


def causal_mask(T, S, device):
    """(T, S) booleans, True where query i may attend to key j. The T queries are the last T of S
    positions (the first S - T keys come from a KV cache), so query i sits at position S - T + i and
    sees keys 0..S-T+i: no looking ahead."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def attention_weights(q, k):
    """softmax(q k^T / sqrt(hs)) over the keys each query may see: (B, nh, T, S), each row sums to
    1 and is 0 above the diagonal (explore.py draws these)."""
    T, S = q.size(-2), k.size(-2)
    scale = 1.0 / math.sqrt(k.size(-1))  # keeps the scores' variance near 1 whatever the head size
    att = (q @ k.transpose(-2, -1)) * scale  # (B, nh, T, S): how well each query matches each key
    att = att.masked_fill(~causal_mask(T, S, q.device), float("-inf"))  # softmax gives those 0
    return F.softmax(att, dim=-1)  # each query's weights over the keys sum to 1


def explicit_attention(q, k, v, dropout_p=0.0):
    """Causal attention written out: attention_weights(q, k) @ v. The reference that
    fused_attention must equal (tests/test_model.py)."""
    att = attention_weights(q, k)  # (B, nh, T, S)
    if dropout_p > 0:
        att = F.dropout(att, dropout_p)
    return att @ v  # (B, nh, T, hs): each query's weighted sum of the values


def fused_attention(q, k, v, dropout_p=0.0):
    """The same function by PyTorch's fused kernel (flash attention on GPUs that have it), which
    never materialises the (T, S) matrix of scores."""
    T, S = q.size(-2), k.size(-2)
    if T == S:
        mask, is_causal = None, True  # the usual triangle: query t sees keys 0..t
    elif T == 1:
        mask, is_causal = None, False  # one new token (KV cache) may look at everything before it
    else:
        mask, is_causal = causal_mask(T, S, q.device), False  # several new tokens after a cache
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                          dropout_p=dropout_p)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t may only look at positions <= t."""

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        # One matmul produces queries, keys and values for all heads at once: (C) -> (3C).
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # The output projection writes back into the residual stream.
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)  # on the attention weights (its p is used)
        self.resid_dropout = nn.Dropout(config.dropout)  # on the output, before the residual add
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        # The attention itself, a function of q, k and v: PyTorch's kernel. ring/fastpaths.py sets
        # another one here where that kernel is slow for one kind of hardware.
        self.attend = fused_attention

    def forward(self, x, cache=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        hs = C // self.n_head
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            # Keys and values of earlier positions never change (they only saw earlier tokens), so
            # they are computed once and kept; the new queries attend to all of them plus the new
            # keys.
            k, v = cache.append(k, v)  # (B, nh, past + T, hs)

        dropout_p = self.attn_dropout.p if self.training else 0.0
        y = self.attend(q, k, v, dropout_p)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # the heads side by side again: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """The position-wise feed-forward network: widen 4x, GELU, project back."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # GELU as GPT-2 computes it, with the tanh approximation, 0.5 x (1 + tanh(sqrt(2 / pi) (x +
        # 0.044715 x^3))). GPT-2 was trained with it; the exact (erf) GELU differs by up to ~1e-3
        # per activation, which is enough to make the released weights give other logits.
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        x = self.c_fc(x)  # (B, T, 4C)
        x = self.gelu(x)
        x = self.c_proj(x)  # (B, T, C)
        return self.dropout(x)


class Block(nn.Module):
    """One transformer block. Pre-norm: each sub-block sees a normalised copy of the residual stream
    and adds its output back, so the stream itself is never normalised and gradients flow straight
    through."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class KVCache:
    """Keys and values of every layer (a LayerCache each) for the tokens seen so far, so that one
    more token costs one position of compute, not the whole context (see sample.generate)."""

    def __init__(self, n_layer):
        self.layers = [LayerCache() for _ in range(n_layer)]
        self.length = 0

    def advance(self, n):  # once all layers have appended n positions
        self.length += n

    def reset(self):
        self.__init__(len(self.layers))


class LayerCache:
    """One layer's keys and values. Each step appends the new positions with torch.cat. That copies
    the cache (a few MB for GPT-2 at 1024 tokens) but keeps every tensor contiguous, which matters
    more: PyTorch's CPU attention kernel is ~100x slower on a strided view into a preallocated
    buffer than on a contiguous tensor."""

    def __init__(self):
        self.k = self.v = None  # (B, nh, length, hs)

    def append(self, k, v):  # the new keys and values after the cached ones; all of them
        if self.k is not None:
            k = torch.cat([self.k, k], dim=2)
            v = torch.cat([self.v, v], dim=2)
        self.k, self.v = k, v
        return k, v


class GPT(nn.Module):
    """GPT-2 as a language model: token ids in, a distribution over the next token at every
    position."""

    def __init__(self, config):
        super().__init__()
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding
                wpe=nn.Embedding(config.block_size, config.n_embd),  # position: learned, absolute
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, eps=1e-5, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying ("Using the Output Embedding to Improve Language Models", Press & Wolf,
        # 2017): the matrix that maps a token to a vector also scores vectors against every token.
        # GPT-2 does this; it saves vocab_size * n_embd parameters (38.6M of GPT-2's 124M).
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2 scales the init of the layers that write into the residual stream by 1/sqrt(2 *
        # n_layer): each block adds two such outputs to the stream, and without the scaling the
        # variance of the stream would grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=True):
        """Parameter count. By default the position embedding is left out, as is usual when quoting
        model sizes; the token embedding stays in because it is also the output layer (weight
        tying)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def hidden_states(self, idx, kv_cache=None):
        """The final (post ln_f) hidden state of every position: (B, T, n_embd)."""
        B, T = idx.size()
        past = 0 if kv_cache is None else kv_cache.length
        limit = self.config.block_size
        assert past + T <= limit, f"{past + T} tokens > block_size {limit}"
        pos = torch.arange(past, past + T, dtype=torch.long, device=idx.device)  # (T,)
        tok_emb = self.transformer.wte(idx)  # (B, T, C): what each token is
        pos_emb = self.transformer.wpe(pos)  # (T, C): where it is, broadcast over the batch
        x = self.transformer.drop(tok_emb + pos_emb)  # (B, T, C)
        caches = [None] * len(self.transformer.h) if kv_cache is None else kv_cache.layers
        for block, cache in zip(self.transformer.h, caches):
            x = block(x, cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None, kv_cache=None):
        """idx: (B, T) token ids. With targets (B, T), the next token at every position, returns all
        logits (B, T, V) and the mean cross-entropy (targets of -1 are ignored). Without, only the
        last position's logits (B, 1, V) are computed: that is all sampling needs, and it skips a (T
        x V) matmul."""
        x = self.hidden_states(idx, kv_cache)
        if targets is None:
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)  # (B, T, V)
        V = logits.size(-1)
        # The loss in float32 whatever the activations' precision: in bf16 its log-softmax over
        # 50,257 tokens would round the reported loss (2.234 instead of 2.230).
        loss = F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    def flops_per_token(self, T=None):
        """Training FLOPs per token (forward + backward), as in the PaLM paper (Chowdhery et al.
        2022), appendix B: 6 per parameter (2 forward, 4 backward) for the matmuls, plus attention's
        own 6 * 2 * n_layer * T * n_embd (scores q.k and the weighted sum of v, over a context of
        T)."""
        cfg = self.config
        T = cfg.block_size if T is None else T
        return 6 * self.num_params() + 12 * cfg.n_layer * T * cfg.n_embd

    def configure_optimizer(self, weight_decay, learning_rate, betas, device_type):
        """AdamW ("Decoupled Weight Decay Regularization", Loshchilov & Hutter, 2019) with weight
        decay on the matmul weights only (every parameter with 2 or more dimensions, embeddings
        included). Biases and LayerNorm gains are left alone: decaying them toward zero only fights
        the normalisation and has no regularising effect."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        # The fused kernel updates all parameters in one launch instead of a dozen per tensor. It
        # exists for CUDA and CPU tensors; MPS gets the default implementation.
        fused = device_type in ("cuda", "cpu")
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)


# --------------------------------------------------------------------------------------------------
# A classifier on the same body


class GPTClassifier(GPT):
    """GPT-2's body with a classification head: one vector per text, scored against n_classes
    classes.

    The head (`score`, n_embd -> n_classes, no bias, as in transformers'
    GPT2ForSequenceClassification, so weights move across unchanged) reads the final hidden state of
    each text's last real token: with causal attention it is the only position that has seen the
    whole text. Batches are right-padded (data.pad_batch), so the padding, whatever its id, comes
    after every real token and cannot change their states. The last token's index comes from the
    true lengths, never from searching for a pad id: GPT-2 has no pad token, the usual stand-in is
    <|endoftext|> (50256), and that can occur inside a text.

    A classifier never predicts tokens, so it has no language-model head; the token embedding keeps
    the weight the two shared."""

    def __init__(self, config):
        super().__init__(config)
        assert config.n_classes > 0, "a classifier needs n_classes > 0"
        del self.lm_head
        self.score = nn.Linear(config.n_embd, config.n_classes, bias=False)
        self.init_head()

    def init_head(self, generator=None):
        """A new head, as every Linear layer here starts: N(0, 0.02) (seeded by generator)."""
        torch.nn.init.normal_(self.score.weight, mean=0.0, std=0.02, generator=generator)

    def forward(self, idx, lengths, labels=None):
        """idx: (B, T) right-padded token ids, lengths: (B,) each row's true length. Returns the
        class logits (B, n_classes) and, given labels (B,) of class ids, their mean cross-entropy.
        """
        x = self.hidden_states(idx)  # (B, T, C)
        last = (lengths - 1).clamp(min=0)  # (B,): the index of each text's last real token
        pooled = x[torch.arange(idx.size(0), device=idx.device), last]  # (B, C)
        logits = self.score(pooled)  # (B, n_classes)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)  # float32
        return logits, loss

    @classmethod
    def from_language_model(cls, lm, n_classes, generator=None):
        """A classifier whose body is lm's weights and whose head is new (seeded by generator). The
        body is built on the meta device and takes lm's tensors as they are: no memory or time is
        spent on a random init that would be overwritten."""
        with torch.device("meta"):
            model = cls(replace(lm.config, n_classes=n_classes))
        model.load_state_dict(lm.state_dict(), strict=False, assign=True)  # lm_head: left out
        model.score.to_empty(device=lm.transformer.wte.weight.device)
        model.init_head(generator)
        return model


# --------------------------------------------------------------------------------------------------
# A model from stored weights, and fitted to a shorter context


def empty_model(config):
    """A GPT (a GPTClassifier for n_classes > 0) on the "meta" device: its tensors have names and
    shapes but no storage, so it costs nothing to build, whatever its size."""
    with torch.device("meta"):
        return (GPTClassifier if config.n_classes > 0 else GPT)(config)


def tensor_shapes(config):
    """{name: shape} of the tensors the model stores (lm_head left out: it is wte)."""
    state = empty_model(config).state_dict()
    return {k: tuple(v.shape) for k, v in state.items() if k != "lm_head.weight"}


def model_from_state(config, state):
    """A model holding exactly the tensors in state, which must have tensor_shapes(config).
    load_state_dict(assign=True) makes them the parameters of an empty model, so nothing is spent
    on a random init that would be overwritten; that replaces wte's Parameter, so the language
    model's head is tied to it again."""
    expected, got = tensor_shapes(config), {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        wrong = sorted(set(got.items()) ^ set(expected.items()))[0]
        raise ValueError(f"the weights do not fit the model's config (at {wrong[0]}: {wrong[1]})")
    model = empty_model(config)
    model.load_state_dict(state, strict=False, assign=True)
    if config.n_classes == 0:
        model.lm_head.weight = model.transformer.wte.weight
    return model


def crop_block_size(model, block_size):
    """Shorten a model's context, e.g. to fine-tune GPT-2 (1024 positions) on 256-token windows:
    the first block_size learned positions are kept and the rest dropped."""
    assert block_size <= model.config.block_size
    model.config.block_size = block_size
    kept = model.transformer.wpe.weight[:block_size].detach().clone()
    model.transformer.wpe.weight = nn.Parameter(kept)
