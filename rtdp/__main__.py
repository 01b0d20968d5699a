from rtdp.cli import main

main()
