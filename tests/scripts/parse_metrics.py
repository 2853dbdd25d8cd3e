"""Parses Prometheus text exposition from stdin with prometheus_client's parser, the one
Python scrapers use, and prints the samples as JSON: [{"name", "type", "labels",
"value"}]. Exits nonzero if the parser rejects the text or a family lacks HELP or TYPE.

    .venv/bin/python tests/scripts/parse_metrics.py < metrics.txt
"""

import json
import math
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
samples = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        value = s.value
        # JSON has no infinities: keep them as strings.
        if math.isinf(value) or math.isnan(value):
            value = str(value)
        samples.append({"name": s.name, "type": family.type, "labels": s.labels, "value": value})

# Every family says what it is: `# HELP` and `# TYPE` before its samples.
declared = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
described = set(re.findall(r"^# HELP (\S+) ", text, re.M))
missing = declared ^ described
if missing:
    sys.exit(f"families without both HELP and TYPE: {sorted(missing)}")
json.dump(samples, sys.stdout)
