"""AppWorld task pack and the worker that runs AppWorld's apps.

`pack` (tasks: instruction, world set-up, reference solution, success check),
`variants` and `_variants_more` (scenarios of 6 variants each, built like pack tasks) and
`worker` run *inside the AppWorld interpreter* (a separate virtual environment, since
appworld pins pydantic<2 and SQLAlchemy<2 while nightowl needs 2.x); they import only
the standard library and appworld. `nightowl.envs.appworld` starts the worker and
talks to it over a pipe.
"""
