import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread: exact-equality tests compare sums whose order must not depend on threading."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
