import subprocess
import sys


def test_import_is_light():
    code = ("import sys, recsys_fast; recsys_fast.Interactions; recsys_fast.Popularity; "
            "print(','.join(m for m in ('torch', 'onnxruntime', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import recsys_fast pulled in: {out.stdout.strip()}"


def test_unknown_attribute_message():
    import recsys_fast
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        recsys_fast.Nope
