"""verl's ``verl.plugins`` entry point: verl imports this module on ``import verl``, in every process.

verl only imports an entry point (it calls nothing) and swallows any exception at DEBUG level, so the hooks are
installed as an import side effect here. Installing them cannot fail: each hook is fail-soft
(:mod:`verl_spro.verl_hooks`), and its failure modes are covered by the tests, not by verl's logs.
"""

from verl_spro.verl_hooks import install

install()
