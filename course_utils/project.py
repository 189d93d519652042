"""Where the course lives. The one place badges and the Colab install read from.

Change these, then run `make badges` (rewrites every notebook's badge and setup cell) and `make labs`.
"""

REPO = "efficient-seq-course/chapter6-labs"  # GitHub owner/name
TAG = "v0.1.0"  # the release the Colab setup cell installs; badges open the notebooks on BRANCH
BRANCH = "main"

# Pins shared by requirements.txt, environment.yml and the Colab setup cell (a test keeps them in sync).
FLA_VERSION = "0.6.0"
MAMBA_VERSION = "2.3.2.post1"
