from vimha.cli import main

main()
