"""The committed generated code matches the .proto files."""

from __future__ import annotations

import filecmp
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
GENERATED = ROOT / "gen" / "llmmesh" / "v1"


class TestGeneratedCode:
    def test_committed_stubs_are_fresh(self, tmp_path: Path) -> None:
        """Regenerating from protos/ gives byte-identical files (run `make proto` when this fails)."""
        sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
        include = Path(protoc.__file__).parent / "_proto"
        status = protoc.main(
            [
                "protoc",
                f"-I{PROTOS}",
                f"-I{include}",
                f"--python_out={tmp_path}",
                f"--pyi_out={tmp_path}",
                f"--grpc_python_out={tmp_path}",
                *sources,
            ]
        )
        assert status == 0
        fresh = tmp_path / "llmmesh" / "v1"
        fresh_files = sorted(p.name for p in fresh.iterdir())
        committed_files = sorted(
            p.name for p in GENERATED.iterdir() if p.name != "__init__.py" and p.suffix in (".py", ".pyi")
        )
        assert committed_files == fresh_files, "generated files differ in name: run `make proto`"
        _, mismatch, errors = filecmp.cmpfiles(fresh, GENERATED, fresh_files, shallow=False)
        assert (mismatch, errors) == ([], []), "stale generated code: run `make proto`"

    def test_generated_package_imports_as_llmmesh_v1(self) -> None:
        """Every service's stubs import from the one generated package."""
        from llmmesh.v1 import (
            agent_service_pb2_grpc,
            provider_service_pb2_grpc,
            router_service_pb2_grpc,
            tool_service_pb2_grpc,
        )

        assert {
            agent_service_pb2_grpc.AgentServiceStub.__name__,
            provider_service_pb2_grpc.ProviderServiceStub.__name__,
            router_service_pb2_grpc.RouterServiceStub.__name__,
            tool_service_pb2_grpc.ToolServiceStub.__name__,
        } == {"AgentServiceStub", "ProviderServiceStub", "RouterServiceStub", "ToolServiceStub"}
