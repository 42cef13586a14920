"""Deploy mode: the whole pipeline from a config, then the report.

Run from this folder: python deploy.py
"""

from mscgym.pipeline import create_msc_processor

processor = create_msc_processor("digits-cnn", "pipeline.json")
try:
    report = processor.run()
finally:
    processor.close()
for row in report["stages"]:
    print(f"{row['stage']:<9} accuracy={row['accuracy']:.4f} latency={row['latency_ms']:.4f} ms "
          f"size={row['size_bytes'] / 1024:.1f} KB")
print("artifacts in", processor.workspace.path("export"))
