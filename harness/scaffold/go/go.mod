module langbench/${name}

go 1.22
