"""docs/settings.md: rendered from what the code reads, and refused when stale or incomplete."""

from __future__ import annotations

from pathlib import Path

from services.deploy import settings_doc
from services.deploy.code_env import CodeEnv, Variable


def _code(extra: tuple[Variable, ...] = ()) -> dict[str, CodeEnv]:
    shared = Variable(("LLMMESH_HOST",), "ServiceSettings.host", True, "127.0.0.1", "Address to bind.")
    router = Variable(("LLMMESH_ROUTING_FILE",), "RouterSettings.routing_file", True, "", "Routing YAML.")
    key = Variable(("OPENAI_API_KEY",), "services/providers/openai/main.py")
    code = {}
    for workload in settings_doc.WORKLOADS:
        variables = [shared]
        if workload == "router":
            variables.append(router)
        if workload == "provider:openai":
            variables += [key, *extra]
        code[workload] = CodeEnv(workload, True, tuple(variables))
    return code


class TestSettingsDoc:
    def test_render_groups_variables_by_class_with_readers_and_defaults(self) -> None:
        """Each settings class is a table naming who reads it; defaults and meanings come from the fields."""
        text = settings_doc.render(_code())
        assert "## ServiceSettings: every service process" in text
        assert "| `LLMMESH_HOST` | `127.0.0.1` | Address to bind. |" in text
        assert "## RouterSettings: router" in text
        assert "| `OPENAI_API_KEY` | the openai adapter |" in text

    def test_a_stale_file_is_a_problem(self, tmp_path: Path) -> None:
        """A committed file that differs from the rendering fails, saying to run make docs."""
        (tmp_path / "docs").mkdir()
        (tmp_path / settings_doc.DOC).write_text(settings_doc.render(_code()))
        assert settings_doc.problems(tmp_path, _code()) == []
        (tmp_path / settings_doc.DOC).write_text(settings_doc.render(_code()).replace("Routing YAML.", "old"))
        assert settings_doc.problems(tmp_path, _code()) == [
            "docs/settings.md does not match the settings classes: run `make docs` and commit it"
        ]

    def test_a_direct_read_without_a_meaning_is_a_problem(self, tmp_path: Path) -> None:
        """A variable read with os.environ must be described in DIRECT_READS before it is documented."""
        code = _code((Variable(("LLMMESH_SECRET_SWITCH",), "services/providers/openai/main.py"),))
        (tmp_path / "docs").mkdir()
        (tmp_path / settings_doc.DOC).write_text(settings_doc.render(code))
        problems = settings_doc.problems(tmp_path, code)
        assert len(problems) == 1
        assert "LLMMESH_SECRET_SWITCH is read directly but has no meaning in DIRECT_READS" in problems[0]
