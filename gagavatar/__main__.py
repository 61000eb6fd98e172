from gagavatar.cli import main

main()
