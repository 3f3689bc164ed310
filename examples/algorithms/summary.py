"""Sample Compute-to-Data algorithm: per-city statistics of every CSV input, written to outputs.

It reads what the configure stage fetched (/data/inputs/<did>/<index>), sees no network and cannot
write to its inputs; only /data/outputs comes back to the consumer.
"""

import csv
import json
import os
from collections import defaultdict

inputs = os.environ.get("INPUTS", "/data/inputs")
outputs = os.environ.get("OUTPUTS", "/data/outputs")
custom_path = os.path.join(inputs, "algoCustomData.json")
custom = {}
if os.path.exists(custom_path):
    with open(custom_path) as handle:
        custom = json.load(handle)
column = custom.get("column", "temp_c")

stats = defaultdict(list)
for did in json.loads(os.environ.get("DIDS", "[]")):
    folder = os.path.join(inputs, did)
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), newline="") as handle:
            for row in csv.DictReader(handle):
                stats[row["city"]].append(float(row[column]))

summary = {
    city: {
        "count": len(values),
        "mean": round(sum(values) / len(values), 2),
        "min": min(values),
        "max": max(values),
    }
    for city, values in sorted(stats.items())
}
with open(os.path.join(outputs, "summary.json"), "w") as out:
    json.dump({"column": column, "cities": summary}, out, indent=2)
print(f"summarised {sum(len(v) for v in stats.values())} rows of {len(stats)} cities on column {column}")
