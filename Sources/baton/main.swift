// The executable: everything it does is in BatonCLI (the command line, one file per command).
import BatonCLI

Main.run()
