from leukolearn.cli import main

main()
