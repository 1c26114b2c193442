"""`make test` (the command CI runs) must fail when a test fails and print pytest's summary line."""

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_make_test_exits_non_zero_and_prints_the_summary_when_a_test_fails(tmp_path: Path) -> None:
    failing = tmp_path / "test_deliberately_failing.py"
    failing.write_text("def test_fails():\n    assert 1 + 1 == 3\n")
    result = subprocess.run(
        ["make", "-C", str(REPO), "test", f"PYTEST_ARGS={failing} -p no:cacheprovider"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "1 failed" in result.stdout
