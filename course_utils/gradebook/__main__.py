"""python -m course_utils.gradebook SUBMISSIONS OUT [...]: see course_utils.gradebook.run."""

import sys

from course_utils.gradebook.run import main

if __name__ == "__main__":
    sys.exit(main())
