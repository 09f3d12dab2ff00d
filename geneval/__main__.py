"""`python -m geneval FOLDER`: score an exported GenEval folder with the built-in scorer (geneval.main)."""

from geneval import main

main()
