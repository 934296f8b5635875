"""Team studies: blind pairwise votes from many raters on answers generated once, pooled and ranked.

- ``store``: studies, their prompts, set-ups, answers, the pairs shown to raters and their votes, in SQLite
  (WAL, a schema version table) in the app's data folder, so all of it outlives a restart; ``admin``, its creators'
  part: close, reopen and delete a study, every rater's progress.
- ``schedule``: which prompt and which two set-ups a rater judges next (even votes, never the same pair twice).
- ``ranking``: Bradley–Terry strengths with bootstrap intervals, the win-rate matrix, agreement between raters.
- ``generation``: the answers, one engine request at a time in a background task, so chat users keep being served.

Import rules: ``studies`` imports of the app only the backend contract (``backends.base``, ``events``,
``request``), ``media`` and ``messages``; ``ui`` builds on it, and no engine imports it.
"""

from studies.records import (CHOICES, MediaFile, Pair, RaterProgress, Study, StudyAnswer, StudyError, StudyPrompt,
                             StudySetup, Vote)
from studies.store import StudyStore

__all__ = ["CHOICES", "MediaFile", "Pair", "RaterProgress", "Study", "StudyAnswer", "StudyError", "StudyPrompt",
           "StudySetup", "StudyStore", "Vote"]
