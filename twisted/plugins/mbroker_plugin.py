from twisted.application.service import ServiceMaker

mbroker = ServiceMaker("mbroker", "mbroker.server.tap", "A message broker (mbroker).", "mbroker")
