"""`--help`: the recipes and every config key with its default and one line of documentation.

The documentation of a key is the comment written beside (or right above) its dataclass field in
align/config/schema.py, read from the source with `tokenize`: the comments stay where a developer edits the
field, and the help can never describe a key that does not exist.
"""

from __future__ import annotations

import inspect
import io
import tokenize
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

from align.algorithms.registry import ALGORITHMS, REGISTRY
from align.config import RECIPES_DIR, config_class, requested_algo
from align.config import Config as CommonConfig

USAGE = """usage: python -m align {train,eval,explain,sample} [recipe=NAME] [key=value ...]
       python -m align sample [recipe=NAME] [key=value ...] --out FILE [--prompts N]   (offline rows)
       align launch [accelerate launch flags] align/train.py [recipe=NAME] [key=value ...]
       python -m align --help [SECTION]      (this text; SECTION e.g. loss)

Everything is key=value on top of a recipe. TRL and verl names are understood too
(learning_rate=, loss_type=dapo, actor_rollout_ref.actor.optim.lr=, ...): see README."""


def field_docs(cls: type) -> dict[str, str]:
    """field name -> its comment in the class source (trailing comment, else the comment lines above)."""
    source = inspect.getsource(cls)
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(tok.start[0])
    lines = source.splitlines()
    docs: dict[str, str] = {}
    names = {f.name for f in fields(cls)}
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        name = stripped.split(":", 1)[0].strip()
        if name not in names or ":" not in stripped or name in docs:
            continue
        if number in comments and number in code_lines:
            docs[name] = comments[number]
            continue
        above, k = [], number - 1
        while k in comments and k not in code_lines:  # a block of comment-only lines right above
            above.insert(0, comments[k])
            k -= 1
        if above:  # a paragraph: its first sentence is the one line
            docs[name] = " ".join(above).split(". ")[0].rstrip(".")
    return docs


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if value == "" else value
    return str(value)


def config_schema(section: str | None = None, argv: list[str] = ()) -> type:
    """The Config of the run `argv` asks for (its algorithm's section included); `--help gcpo` shows gcpo's."""
    algo = REGISTRY.section_owner(section) if section and REGISTRY.section_owner(section) else requested_algo(list(argv))
    return config_class(REGISTRY.section(algo))


def config_help(section: str | None = None, argv: list[str] = ()) -> str:
    """One block per config section of the run `argv` asks for: `key = default   doc`."""
    Config = config_schema(section, argv)
    top, blocks = [], []
    for f in fields(Config):
        default = _default(f)
        if is_dataclass(default):
            if section and f.name != section:
                continue
            docs = field_docs(type(default))
            head = (type(default).__doc__ or "").strip().splitlines()[0] if type(default).__doc__ and not type(default).__doc__.startswith(type(default).__name__ + "(") else ""
            rows = [(f"{f.name}.{g.name}", _show(getattr(default, g.name)), docs.get(g.name, "")) for g in fields(default)]
            blocks.append((f.name + (f"  ({head})" if head else ""), rows))
        elif not section:
            top.append((f.name, _show(default), field_docs(CommonConfig).get(f.name, "")))
    if section and not blocks:
        names = [f.name for f in fields(Config) if is_dataclass(_default(f))]
        return f"no config section {section!r}; sections: {', '.join(names)}"
    out = []
    for title, rows in ([("top level", top)] if top else []) + blocks:
        width = max(len(k) + len(v) for k, v, _ in rows) + 3
        out.append(f"{title}:")
        out += [f"  {k} = {v}".ljust(width + 4) + (f"  # {d}" if d else "") for k, v, d in rows]
        out.append("")
    return "\n".join(out).rstrip()


def recipes_help() -> str:
    lines = ["recipes (recipe=NAME, or a path to a .yaml file):"]
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        first = next((l.lstrip("#").strip() for l in path.read_text().splitlines() if l.startswith("#")), "")
        lines.append(f"  {path.stem:<24} {first}")
    return "\n".join(lines)


def full_help(section: str | None = None, argv: list[str] = ()) -> str:
    if section:
        return config_help(section, argv)
    others = ", ".join(f"--help {e.cls.section}" for e in ALGORITHMS.values() if e.cls.section)
    return "\n\n".join([USAGE, recipes_help(), f"config keys of algo={requested_algo(list(argv))} (key = default  # what it does; "
                        f"other algorithms' sections: {others}):", config_help(None, argv)])


def wants_help(argv: list[str]) -> bool:
    return any(a in ("-h", "--help", "help") for a in argv)


def help_section(argv: list[str]) -> str | None:
    """The section named after --help (`--help loss`), if any."""
    for i, a in enumerate(argv):
        if a in ("-h", "--help", "help") and i + 1 < len(argv) and "=" not in argv[i + 1]:
            return argv[i + 1]
    return None
