from tmrl_core.cli import main

main()
