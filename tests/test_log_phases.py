"""`verl-spro smoke`'s start-up lines: verl 0.9.1's known log lines become one short line each, with elapsed time."""

from __future__ import annotations

from verl_spro.log_phases import PHASES, StartupPhases

# Lines as main_ppo.log holds them (ANSI colour codes included), abridged from a V1 run on this CPU.
LOG = [
    "[validate_config] All configuration checks passed successfully!",
    "ray init kwargs: {'num_cpus': 16}",
    "2026-12-03 15:54:17,181\tINFO worker.py:2029 -- Started a local Ray instance. View the dashboard at ...",
    "\x1b[36m(TaskRunnerV1 pid=1608)\x1b[0m {'actor_rollout_ref': {'actor': {...",
    "\x1b[36m(TaskRunnerV1 pid=1608)\x1b[0m dataset len: 64",
    "\x1b[36m(TaskRunnerV1 pid=1608)\x1b[0m dataset len: 8",
    "\x1b[36m(TaskRunnerV1 pid=1608)\x1b[0m INFO:15:54:55,595:create worker group dict_keys(['actor_rollout'])",
    "\x1b[36m(TaskRunnerV1 pid=1608)\x1b[0m INFO:2026-12-03 15:55:04,505:actor and ref model engine initialized",
    "\x1b[36m(TaskRunnerV1 pid=1608)\x1b[0m LLMServerManager: ['192.0.2.2:39601']",
]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_phase_is_said_once_in_order_and_silence_gets_an_elapsed_line(tmp_path):
    log = tmp_path / "main_ppo.log"
    log.write_bytes(b"==== an earlier run ====\n" + "\n".join(LOG).encode() + b"\n")  # a resumed run's log
    clock = _Clock()
    phases = StartupPhases(log, clock=clock, quiet_s=30)
    said = []
    with log.open("ab") as f:
        for index, line in enumerate(LOG):
            clock.now += 5
            f.write(line.encode())  # half a line first: nothing until it is complete
            f.flush()
            said += phases.poll()
            f.write(b"\n")
            f.flush()
            said += phases.poll()
            if index == 1:  # a long silence between two phases
                clock.now += 31
                said += phases.poll()
    assert said == [
        "config valid; starting Ray (5 s)",
        "still at: starting Ray (41 s)",
        "Ray up; verl's task runner starting (46 s)",
        "data loaded; starting the workers (56 s)",
        "worker group created; building the actor and reference models (66 s)",
        "actor and reference models built; starting the rollout (71 s)",
        "rollout server up; running the first step (76 s)",
    ]
    assert len(said) == len(PHASES) + 1


def test_a_missing_log_is_only_silence(tmp_path):
    clock = _Clock()
    phases = StartupPhases(tmp_path / "not-yet.log", clock=clock, quiet_s=30)
    assert phases.poll() == []
    clock.now = 30
    assert phases.poll() == ["still at: starting main_ppo (30 s)"]
