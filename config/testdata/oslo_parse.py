"""Parses each file named on the command line with oslo.config's own INI
parser and prints, as one JSON list, what it read: the normalized groups
with every assignment of each key, or the parse error.

Used by fuzz_test.go to check the Go parser against oslo.config on every
seed of the parser's fuzz targets.
"""
import json
import sys

from oslo_config import cfg, iniparser

out = []
for path in sys.argv[1:]:
    sections, normalized = {}, {}
    parser = cfg.ConfigParser(path, sections)
    parser._add_normalized(normalized)
    try:
        parser.parse()
        out.append({'groups': {g: keys for g, keys in normalized.items() if keys}})
    except iniparser.ParseError as e:
        out.append({'error': str(e), 'line': e.lineno})
    except UnicodeDecodeError:
        out.append({'skip': 'not UTF-8'})
json.dump(out, sys.stdout)
