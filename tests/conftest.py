import os

# Tests run on the CPU with a private compilation cache (second runs skip most compiles).
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# No implicit rank promotion in the project's code: (n, D) - (K, D) must be written out, so a
# missing axis fails here instead of broadcasting into a wrong shape. Subprocesses inherit it.
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
# Tests are compile-bound: LLVM at -O0 halves XLA:CPU compile times (IEEE semantics are kept, so
# results only differ where -O2 would too). Subprocesses inherit it. MI_JAX_TEST_XLA_OPT=1: -O2.
if os.environ.get("MI_JAX_TEST_XLA_OPT") != "1":
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every run, so CI results do not depend on luck.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.load_profile("repeatable")


@pytest.fixture
def key():
    return jax.random.key(0)
