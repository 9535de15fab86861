"""The post-import machinery (verl_spro.import_hooks) under concurrent imports: no hang, every hook in place."""

from __future__ import annotations

import subprocess
import sys
import textwrap

#: Forces the interleaving that deadlocked the finder when it called ``importlib.util.find_spec`` (which re-imports
#: the parent package, taking the parent's module lock under the child's): thread B starts importing the package
#: ``verl.trainer.ppo.v1`` and is held (by a finder placed after verl-spro's) while it owns the package's lock; thread
#: A then imports the hooked ``v1.utils``; B resumes and its ``trainer_base`` imports ``v1.utils``. Then threads
#: import the other hooked modules at once. No thread may hang and every hook must be in place. (An import that
#: Python's own cycle detection fails in a thread, as it does without verl-spro, is done again on the main thread.)
SCRIPT = textwrap.dedent(
    """
    import os, sys, threading, time
    import accelerate.big_modeling, ray, torch, transformers  # noqa: F401  (their own import races are not ours)
    import verl  # noqa: F401  (loads verl-spro: its post-import finder is sys.meta_path[0])

    package_locked = threading.Event()

    class HoldPackageImport:
        def find_spec(self, fullname, path, target=None):
            if fullname.startswith("verl.trainer.ppo.v1.") and not package_locked.is_set():
                package_locked.set()  # B is inside verl/trainer/ppo/v1/__init__.py, holding the package's lock
                time.sleep(1.0)  # ... while A starts importing v1.utils
            return None

    sys.meta_path.insert(1, HoldPackageImport())

    def load(name, after=None):
        if after is not None:
            after.wait()
        try:
            __import__(name)
        except (ImportError, RuntimeError) as err:  # Python's own _DeadlockError on verl's import cycles, which
            print(f"{name}: {err!r}", file=sys.stderr)  # happens without verl-spro too: imported again below

    threads = [
        threading.Thread(target=load, args=("verl.trainer.ppo.v1",), daemon=True),
        threading.Thread(target=load, args=("verl.trainer.ppo.v1.utils", package_locked), daemon=True),
        threading.Thread(target=load, args=("verl.trainer.ppo.ray_trainer", package_locked), daemon=True),
        threading.Thread(target=load, args=("verl.trainer.ppo.v1.trainer_base", package_locked), daemon=True),
    ]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    for t in threads:
        t.join(max(0.0, deadline - time.time()))
    if any(t.is_alive() for t in threads):
        print("HANG", flush=True)
        os._exit(3)  # a normal exit would wait for the deadlocked imports

    from verl.trainer.ppo import ray_trainer
    from verl.trainer.ppo.v1 import trainer_base, utils
    from verl_spro.verl_hooks import hook_failures

    assert getattr(ray_trainer.compute_advantage, "__verl_spro_wraps__", None) is not None
    assert utils.compute_advantage is ray_trainer.compute_advantage
    assert getattr(trainer_base.PPOTrainer._compute_advantage, "__verl_spro_wraps__", None) is not None
    assert not hook_failures(), hook_failures()
    print("OK")
    """
)


def test_a_hooked_module_imported_while_its_package_initialises_in_another_thread_does_not_deadlock() -> None:
    """Before the fix this interleaving hung for good (it hung 3 runs in 16 when left to chance)."""
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        raise AssertionError("the concurrent imports did not finish within 180 s") from None
    assert proc.returncode == 0 and proc.stdout.split()[-1:] == ["OK"], (proc.stdout[-2000:], proc.stderr[-3000:])
