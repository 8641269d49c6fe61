module moorage.dev/nodeimages

go 1.26.0
