from gradbal.entry import main

main()
