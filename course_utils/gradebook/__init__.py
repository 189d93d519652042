"""Grading a class's notebooks where the submissions cannot fool the grader: `make grade SUBMISSIONS=dir`.

| module      | concern                                                                                  |
|-------------|------------------------------------------------------------------------------------------|
| submissions | finding the notebooks (alice_02_causal_rnn.ipynb, alice/02_causal_rnn.ipynb) and labs     |
| protocol    | the wire: length-prefixed torch.save payloads, read with torch.load(weights_only=True)  |
| worker      | the untrusted side: one process per submission runs the student's code, decides nothing  |
| trusted     | that process seen from the grader: deadlines, memory, proxies the engine can grade       |
| grade_one   | one submission's verdicts: engine.evaluate, unchanged, on the proxies                    |
| run         | the class: process pool or Dask cluster, gradebook.csv, feedback/*.md, summary, CLI      |

The trust boundary. In a notebook, `grade()` prints ✅ from inside the student's kernel, where their code can
redefine `grade`, monkeypatch course_utils or torch, print a fake ✅, silence tracebacks, or return an object
whose `__eq__` always agrees. Here the decision is made in another process: the submission's process only
loads the notebook's definitions (imports, functions, classes, UPPER_CASE literals — no cell is run, no
output is read) and runs its functions on inputs the grader sends; it returns plain tensors (anything else
arrives as "returned a <type>" and fails), which the grader compares with the reference itself. Nothing the
submission prints, patches or overrides in its own process reaches the grader's.

Each submission gets a per-exercise timeout, a memory limit (RLIMIT_DATA, watched through its RSS too) and
its own process group; an exception, a loop, a blow-up, sys.exit / os._exit or a kill becomes that row's
result with its reason, and the next exercise gets a fresh process.

Limitations:
- Checks of *how* a function computes (the engine's extra checks: forbidden library calls, FLOP and
  torch-call counts, memory growth) need to observe the function running, so they run in the submission's
  process and only their outcome comes back, marked "measured in the submission's process": a submission
  that tampers with its own process (patching torch's profiler hooks, the check modules) can fool them.
  The values themselves are always checked here.
- course_utils.refs calls are also recorded by the worker and flagged; a call to fla or mamba-ssm directly
  is seen only by the engine's forbidden-call check (in the submission's process).
- The submission's process runs with the grader's user rights: it cannot change a verdict, but it can read
  and write files that user can. Grade untrusted classes as a dedicated user or in a container.
"""

from course_utils.gradebook.grade_one import Options, grade_submission
from course_utils.gradebook.run import Report, grade_folder, main
from course_utils.gradebook.submissions import Submission, find_submissions, lab_exercises

__all__ = ["Options", "Report", "Submission", "find_submissions", "grade_folder", "grade_submission",
           "lab_exercises", "main"]
