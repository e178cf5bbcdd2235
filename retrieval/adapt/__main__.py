from retrieval.adapt.run import main

main()
