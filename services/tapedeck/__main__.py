from tapedeck.cli import main

main()
