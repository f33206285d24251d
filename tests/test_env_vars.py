"""Every option has a SENTICTL_* variable, named by README's rule, and the variable really sets it.

Rule: ``SENTICTL_<OPTION>`` for an option that means the same in every command that has it,
``SENTICTL_<COMMAND>_<OPTION>`` (or a family prefix such as ``SENTICTL_KAFKA_``) where one name
means different things in different commands. Exempt: --help, --version, --force and the
repeatable -X.
"""

from __future__ import annotations

import click
import pytest

from sentictl.cli import cli

EXEMPT = {"help", "version", "force", "kafka_property"}
FAMILIES = ("KAFKA_",)


def _commands(group: click.Group = cli, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def _options(command: click.Command):
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in EXEMPT and "-X" not in param.opts:
            yield param


ALL = [(path, command, param) for path, command in _commands() for param in _options(command)]


def _stem(param: click.Option) -> str:
    """The option's long name as a variable suffix: --max-chars → MAX_CHARS."""
    return max(param.opts, key=len).lstrip("-").replace("-", "_").upper()


def _envvars(param: click.Option) -> list[str]:
    env = param.envvar
    return [env] if isinstance(env, str) else list(env or [])


@pytest.mark.parametrize("path,command,param", ALL, ids=[f"{' '.join(p)}:{o.name}" for p, _, o in ALL])
def test_every_option_has_a_variable_named_by_the_rule(path, command, param):
    names = _envvars(param)
    assert names, f"sentictl {' '.join(path)} {param.opts[0]} has no SENTICTL_* variable"
    stem = _stem(param)
    stems = {stem, stem.removeprefix("NO_")} | {o.lstrip("-").replace("-", "_").upper() for o in param.opts}
    # A command's own prefix, or its group's (cache clear --ttl → SENTICTL_CACHE_TTL), or a family's.
    prefixes = ["SENTICTL_"] + ["SENTICTL_" + "_".join(path[:n]).upper() + "_" for n in range(1, len(path) + 1)]
    prefixes += ["SENTICTL_" + f for f in FAMILIES]
    allowed = {p + s for p in prefixes for s in stems}
    assert set(names) & allowed, f"{names} for {param.opts}: expected one of {sorted(allowed)}"
    assert param.show_envvar, "the variable is shown in --help"


def test_a_shared_unprefixed_variable_means_one_thing():
    """SENTICTL_X used by several commands: the same kind of value wherever it appears (defaults may
    differ by door: bridge's --bootstrap defaults to localhost:9092, serve's to none)."""
    seen: dict[str, tuple] = {}
    for path, _, param in ALL:
        for name in _envvars(param):
            if name.startswith(f"SENTICTL_{'_'.join(path).upper()}_"):
                continue
            shape = (type(param.type).__name__, param.is_flag, param.multiple)
            if name in seen:
                assert seen[name][0] == shape, f"{name}: {seen[name][1]} vs {' '.join(path)} {param.opts}"
            else:
                seen[name] = (shape, f"{' '.join(path)} {param.opts}")


def _value(param: click.Option, tmp_path) -> tuple[str, object] | None:
    """A valid non-default value for the variable, and what the parameter should then hold."""
    kind = param.type
    if param.is_flag:
        # The non-default side: "false" for a flag that is on by default (--auto-truncate), else "1".
        return ("false", False) if param.default is True else ("1", True)
    if isinstance(kind, click.Choice):
        choices = [c for c in kind.choices if c != param.default]
        return choices[0], choices[0]
    if isinstance(kind, (click.IntRange, type(click.INT))):
        low = getattr(kind, "min", None)
        value = max(7, (low or 0) + 1)
        if getattr(kind, "max", None) is not None:
            value = min(value, kind.max)
        return str(value), value
    if isinstance(kind, (click.FloatRange, type(click.FLOAT))):
        return "0.5", 0.5
    if isinstance(kind, click.Path):
        target = tmp_path / "thing"
        if kind.exists:
            if kind.file_okay:
                target.write_text("text\nhello\n")
            else:
                target.mkdir()
        return str(target), str(target)
    if isinstance(kind, click.File):
        return None
    return "some-value", "some-value"


@pytest.mark.parametrize("path,command,param", ALL, ids=[f"{' '.join(p)}:{o.name}" for p, _, o in ALL])
def test_the_variable_sets_the_option(path, command, param, tmp_path, monkeypatch):
    for name in [n for n in __import__("os").environ if n.startswith("SENTICTL_")]:
        monkeypatch.delenv(name)
    picked = _value(param, tmp_path)
    if picked is None:
        pytest.skip("file option")
    raw, expected = picked
    for name in _envvars(param):
        monkeypatch.setenv(name, raw)
        ctx = click.Context(command)
        # A repeatable option splits its variable into values (click's value_from_envvar does the split).
        got = param.value_from_envvar(ctx) if param.multiple else param.resolve_envvar_value(ctx)
        assert got is not None, f"{name} not read"
        value = param.type_cast_value(click.Context(command), got)
        if param.multiple:  # a repeatable option reads its variable as a space-separated list
            assert isinstance(value, tuple) and len(value) == 1, f"{name}={raw!r} gave {value!r}"
            value = value[0]
        if isinstance(expected, str) and not isinstance(value, str):
            value = str(value)
        assert value == expected or (param.is_flag and bool(value) == bool(expected)), f"{name}={raw!r} gave {value!r}"
        monkeypatch.delenv(name)
