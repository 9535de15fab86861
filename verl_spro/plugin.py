"""verl's ``verl.plugins`` entry point: verl imports this module on ``import verl``, in every process.

verl only imports an entry point (it calls nothing) and swallows any exception at DEBUG level, so the hooks are
installed as an import side effect here and their failure modes are covered by the tests, not by verl's logs.
"""

from verl_spro.verl_integration import install

install()
