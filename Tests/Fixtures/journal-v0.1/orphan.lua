runStage{id = "first", cmd = {"true"}}
runStage{id = "long", cmd = {"sleep", "30"}}
