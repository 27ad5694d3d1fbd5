import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread_for_shared_fixtures():
    # Module-scoped fixtures (a model trained once for a file's tests) are set up before the
    # per-test fixture below: on 2 busy cores, 2 threads made one 30 s fixture take 7 minutes.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic_and_one_thread():
    # The test models are tiny: a second thread gains nothing, and on a CPU shared with other work it mostly
    # spin-waits (10x slower here).
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides):
    from model import GPTConfig

    values = dict(block_size=16, vocab_size=37, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=True)
    values.update(overrides)
    return GPTConfig(**values)
