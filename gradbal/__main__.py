from gradbal.cli import main

main()
