module moorage.dev/bench/pullnet

go 1.22
