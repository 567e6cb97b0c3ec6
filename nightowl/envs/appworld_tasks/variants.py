"""AppWorld scenario variants: several tasks per scenario, same API flow, other values.

As in AppWorld itself, a *scenario* (pay a friend, add a task to a project, count the
notes with a tag, ...) has several tasks that need the same API calls with different
entities and values, so a student that retrieves a teacher's demonstration of one
variant finds something close to the task at hand. Each scenario has 6 variants:
0, 1, 2 are train, 3 is dev, 4 and 5 are test; task ids are
``appworld/<scenario>/<split>/<variant>`` (``appworld/v-venmo-pay/test/4``). Scenario
names start with ``v-`` and never clash with the pack's own task names.

Variants start from the pack's base world (`pack.build_world`); a variant that needs
entities the base world lacks has its own ``setup``. Like the pack, this module runs
inside the AppWorld interpreter (stdlib only at import time; set-ups and checks receive
AppWorld's model modules). simple_note and todoist scenarios are here, venmo and
spotify ones in `_variants_more`. `find_task` looks up a pack task or a variant.
"""

from __future__ import annotations

import functools
from typing import Any

try:
    from . import _variants_more, pack
    from .pack import Setup, Variant
except ImportError:  # in the AppWorld worker this folder is on sys.path, not the package
    import _variants_more  # type: ignore[no-redef]
    import pack  # type: ignore[no-redef]
    from pack import Setup, Variant  # type: ignore[no-redef]

DONE = pack.DONE
_ok = pack._ok
#: variant index -> split
VARIANT_SPLITS = ("train", "train", "train", "dev", "test", "test")
PREFIX = "v-"


def split_of(variant: int) -> str:
    """The split of a variant index: 0-2 train, 3 dev, 4-5 test."""
    if not 0 <= variant < len(VARIANT_SPLITS):
        raise ValueError(f"variant index {variant} out of range 0..{len(VARIANT_SPLITS) - 1}")
    return VARIANT_SPLITS[variant]


def _no_setup(m: dict[str, Any]) -> None:
    return None


def _task(name: str, app: str, index: int, v: Variant) -> pack.PackTask:
    return pack.PackTask(
        name=name,
        split=split_of(index),
        app=app,
        instruction=v.instruction,
        solution=(pack.login(app), *v.steps),
        check=v.check,
        setup=v.setup or _no_setup,
    )


@functools.cache
def catalogue() -> dict[str, tuple[pack.PackTask, ...]]:
    """Scenario name -> its variants (index = variant = seed), all scenarios."""
    out = {}
    for name, (app, variants) in {**SCENARIOS, **_variants_more.SCENARIOS}.items():
        assert name.startswith(PREFIX) and name not in pack.TASKS, name
        assert len(variants) == len(VARIANT_SPLITS), (name, len(variants))
        out[name] = tuple(_task(name, app, i, v) for i, v in enumerate(variants))
    return out


def find_task(game: str, seed: int) -> pack.PackTask | None:
    """The task of ``game`` (a pack task, seed 0, or a scenario) and ``seed``, or None."""
    if game in pack.TASKS:
        return pack.TASKS[game] if seed == 0 else None
    variants = catalogue().get(game)
    if variants is None or not 0 <= seed < len(variants):
        return None
    return variants[seed]


# --- simple_note ------------------------------------------------------------------------
def _find_note(title: str) -> str:
    return (
        f"note = [n for n in apis.simple_note.search_notes(access_token=token, query={title!r}, "
        f"page_limit=20) if n['title'] == {title!r}][0]"
    )


def _base_content(title: str) -> str:
    return next(c for t, c, _ in pack.NOTES if t == title)


def note_create(title: str, content: str, tag: str) -> Variant:
    """Create a note with a title, content and tag."""

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        n = pack._notes(m).get(title)
        ok = n is not None and content in (n.content or "") and tag in (n.tags or [])
        return _ok(ok, f"no note {title!r} with that content and tag")

    return Variant(
        f"Make a new Simple Note with the title '{title}', the text '{content}' and the tag "
        f"'{tag}'.",
        (
            f"apis.simple_note.create_note(access_token=token, title={title!r}, "
            f"content={content!r}, tags=[{tag!r}])",
            DONE,
        ),
        check,
    )


def note_append(title: str, line: str) -> Variant:
    """Append a line to an existing note."""
    before = _base_content(title)

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        c = pack._notes(m)[title].content or ""
        return _ok(c.rstrip().endswith(line) and c.startswith(before), f"content is {c!r}")

    return Variant(
        f"In my Simple Note '{title}', add the line '{line}' at the end.",
        (
            _find_note(title),
            "apis.simple_note.add_content_to_note(access_token=token, note_id=note['note_id'], "
            f"append_or_prepend='append', added_content={chr(10) + line!r})",
            DONE,
        ),
        check,
    )


def note_rename(old: str, new: str) -> Variant:
    """Rename a note, keeping its content."""
    content = _base_content(old)

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        n = pack._notes(m)
        ok = old not in n and new in n and n[new].content == content
        return _ok(ok, f"notes: {sorted(n)}")

    return Variant(
        f"Change the title of my Simple Note '{old}' to '{new}'; keep its content as it is.",
        (
            _find_note(old),
            "apis.simple_note.update_note(access_token=token, note_id=note['note_id'], "
            f"title={new!r})",
            DONE,
        ),
        check,
    )


def note_count_tag(tag: str, extra: int) -> Variant:
    """Count the notes with a tag (``extra`` more of them are added by the set-up)."""
    expected = sum(tag in tags for _, _, tags in pack.NOTES) + extra

    def setup(m: dict[str, Any]) -> None:
        uid = pack._uid(m, "simple_note")
        for k in range(extra):
            m["simple_note"].Note.create_save(
                user_id=uid, title=f"{tag.title()} note {k + 1}", content=f"#{k + 1}", tags=[tag]
            )

    return Variant(
        f"Count my Simple Notes that carry the tag '{tag}' and answer with that number.",
        (
            f"notes = apis.simple_note.search_notes(access_token=token, tags=[{tag!r}], "
            "page_limit=20)\nprint(len(notes))",
            "apis.supervisor.complete_task(answer=len(notes))",
        ),
        lambda m, answer: _ok(pack._answer_is(answer, expected), f"answer {answer!r}"),
        setup if extra else None,
    )


# --- todoist --------------------------------------------------------------------------------
def add_project(m: dict[str, Any], name: str, tasks: list[tuple[str, bool]]) -> None:
    """Set-up helper: add ``tasks`` (title, completed) to project ``name`` (made if missing)."""
    td, uid = m["todoist"], pack._uid(m, "todoist")
    p = td.Project.find_one(user_id=uid, name=name)
    if p is None:
        p = td.Project.create_save(user_id=uid, name=name, is_inbox=False)
        td.ProjectCollaboratorLink.create_save(project_id=p.id, user_id=uid)
    start = len(pack._tasks(m, name))
    for i, (title, done) in enumerate(tasks):
        td.Task.create_save(
            project_id=p.id,
            user_id=uid,
            title=title,
            priority="medium",
            order_index=start + i,
            is_completed=done,
        )


def _project_setup(name: str, tasks: list[tuple[str, bool]]) -> Setup | None:
    return (lambda m: add_project(m, name, tasks)) if tasks else None


OPEN_TASKS = (
    "tasks = apis.todoist.show_tasks(access_token=token, project_id=project['project_id'], "
    "is_completed=False)['no_section_tasks']"
)


def todo_add(project: str, title: str, priority: str) -> Variant:
    """Add a task with a priority to a project."""

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        t = pack._tasks(m, project).get(title)
        return _ok(t is not None and t.priority == priority, f"no {priority} task {title!r}")

    return Variant(
        f"Put a new task '{title}' with {priority} priority into my Todoist project '{project}'.",
        (
            pack.FIND_PROJECT.format(name=project),
            "apis.todoist.create_task(access_token=token, project_id=project['project_id'], "
            f"title={title!r}, priority={priority!r})",
            DONE,
        ),
        check,
    )


def todo_complete(project: str, title: str) -> Variant:
    """Complete one open task of a base-world project."""
    base = dict(pack.PROJECTS[project])

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        ts = pack._tasks(m, project)
        wrong = [k for k, t in ts.items() if t.is_completed != (k == title or bool(base.get(k)))]
        return _ok(title in ts and not wrong, f"wrong completion state: {wrong}")

    return Variant(
        f"In my Todoist project '{project}', tick off the task '{title}' as done.",
        (
            pack.FIND_PROJECT.format(name=project),
            "tasks = apis.todoist.show_tasks(access_token=token, "
            "project_id=project['project_id'])['no_section_tasks']\n"
            f"target = [t for t in tasks if t['title'] == {title!r}][0]\n"
            "apis.todoist.update_task(access_token=token, task_id=target['task_id'], "
            "is_completed=True)",
            DONE,
        ),
        check,
    )


def todo_count_open(project: str, extra: list[tuple[str, bool]]) -> Variant:
    """Count a project's open tasks (``extra`` tasks are added by the set-up)."""
    expected = sum(not done for _, done in [*pack.PROJECTS.get(project, []), *extra])
    return Variant(
        f"How many tasks in my Todoist project '{project}' are still open? Answer with the number.",
        (
            pack.FIND_PROJECT.format(name=project),
            OPEN_TASKS + "\nprint(len(tasks))",
            "apis.supervisor.complete_task(answer=len(tasks))",
        ),
        lambda m, answer: _ok(pack._answer_is(answer, expected), f"answer {answer!r}"),
        _project_setup(project, extra),
    )


def todo_new_project(project: str, title: str) -> Variant:
    """Create a project and a first task in it."""
    return Variant(
        f"Start a new Todoist project called '{project}' whose first task is '{title}'.",
        (
            f"project = apis.todoist.create_project(access_token=token, name={project!r})",
            "apis.todoist.create_task(access_token=token, project_id=project['project_id'], "
            f"title={title!r})",
            DONE,
        ),
        lambda m, answer: _ok(
            title in pack._tasks(m, project), f"no project {project!r} with {title!r}"
        ),
    )


def todo_complete_all(project: str, extra: list[tuple[str, bool]]) -> Variant:
    """Complete every open task of a project (``extra`` tasks are added by the set-up)."""
    total = len(pack.PROJECTS.get(project, [])) + len(extra)

    def check(m: dict[str, Any], answer: Any) -> tuple[bool, str]:
        ts = pack._tasks(m, project)
        ok = len(ts) == total and all(t.is_completed for t in ts.values())
        return _ok(ok, f"open tasks remain in {project!r}")

    return Variant(
        f"Mark all the unfinished tasks of my Todoist project '{project}' as completed.",
        (
            pack.FIND_PROJECT.format(name=project),
            OPEN_TASKS + "\nfor t in tasks:\n"
            "    apis.todoist.update_task(access_token=token, task_id=t['task_id'], "
            "is_completed=True)",
            DONE,
        ),
        check,
        _project_setup(project, extra),
    )


_GARDEN = [("Buy soil", False), ("Plant tomatoes", False), ("Fix the hose", True)]
_MOVING = [("Book movers", False), ("Pack books", True), ("Cancel internet", True)]
_STUDIES = [("Read chapter 4", False), ("Finish essay", False), ("Email tutor", False)]

SCENARIOS: dict[str, tuple[str, list[Variant]]] = {
    "v-note-create": (
        "simple_note",
        [
            note_create("Gift ideas", "a scarf for Mia", "personal"),
            note_create("Recipes to try", "lentil soup", "home"),
            note_create("Meeting agenda", "budget review", "work"),
            note_create("Camping gear", "tent, stove, lantern", "travel"),
            note_create("Podcast list", "Radiolab", "media"),
            note_create("Reading log", "finished Dune", "books"),
        ],
    ),
    "v-note-append": (
        "simple_note",
        [
            note_append("Groceries", "butter"),
            note_append("Books to read", "Middlemarch"),
            note_append("Trip ideas", "Oslo"),
            note_append("Standup notes", "fix the flaky test"),
            note_append("Quarterly goals", "cut cloud costs"),
            note_append("Weekend chores", "water the plants"),
        ],
    ),
    "v-note-rename": (
        "simple_note",
        [
            note_rename("Books to read", "Reading list"),
            note_rename("Standup notes", "Daily standup"),
            note_rename("Groceries", "Shopping list"),
            note_rename("Quarterly goals", "Q3 goals"),
            note_rename("Old ideas", "Idea archive"),
            note_rename("Weekend chores", "Saturday chores"),
        ],
    ),
    "v-note-count-tag": (
        "simple_note",
        [
            note_count_tag("work", 0),
            note_count_tag("travel", 2),
            note_count_tag("home", 3),
            note_count_tag("recipes", 4),
            note_count_tag("personal", 4),
            note_count_tag("music", 1),
        ],
    ),
    "v-todo-add": (
        "todoist",
        [
            todo_add("Home", "Replace the light bulb", "high"),
            todo_add("Work", "Update the slides", "low"),
            todo_add("Errands", "Buy stamps", "medium"),
            todo_add("Inbox", "Call the bank", "high"),
            todo_add("Work", "Send the invoice", "medium"),
            todo_add("Home", "Clean the gutters", "low"),
        ],
    ),
    "v-todo-complete": (
        "todoist",
        [
            todo_complete("Home", "Fix the sink"),
            todo_complete("Work", "Review PR"),
            todo_complete("Errands", "Post office"),
            todo_complete("Work", "Write report"),
            todo_complete("Errands", "Dry cleaning"),
            todo_complete("Work", "Plan offsite"),
        ],
    ),
    "v-todo-count-open": (
        "todoist",
        [
            todo_count_open("Work", []),
            todo_count_open("Home", []),
            todo_count_open("Errands", [("Return library books", False), ("Buy ink", False)]),
            todo_count_open("Garden", [*_GARDEN, ("Prune roses", False), ("Rake", False)]),
            todo_count_open("Moving", _MOVING),
            todo_count_open("Studies", [*_STUDIES, ("Print notes", False), ("Quiz", True)]),
        ],
    ),
    "v-todo-new-project": (
        "todoist",
        [
            todo_new_project("Fitness", "Join a gym"),
            todo_new_project("Wedding", "Book a venue"),
            todo_new_project("Taxes", "Collect receipts"),
            todo_new_project("Kitchen remodel", "Get three quotes"),
            todo_new_project("Book club", "Pick the first book"),
            todo_new_project("Vacation", "Renew passport"),
        ],
    ),
    "v-todo-complete-all": (
        "todoist",
        [
            todo_complete_all("Home", []),
            todo_complete_all("Work", []),
            todo_complete_all("Errands", []),
            todo_complete_all("Garden", _GARDEN),
            todo_complete_all("Moving", [*_MOVING, ("Label boxes", False)]),
            todo_complete_all("Studies", _STUDIES),
        ],
    ),
}
