"""`python -m nextchar` runs the same CLI as the `nextchar` console script."""

from nextchar.cli import main

main()
