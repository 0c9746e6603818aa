from routekeeper.cli.main import main

main()
