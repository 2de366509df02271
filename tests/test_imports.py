import subprocess
import sys


def test_core_and_inference_import_without_lightning():
    code = (
        "import sys; import fusiondiff.diffusion, fusiondiff.models, fusiondiff.inference, fusiondiff.metrics.fusion; "
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'hydra') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
