from twisted.application.service import ServiceMaker

mbroker = ServiceMaker("mbroker", "mbroker.tap", "A message broker (mbroker).", "mbroker")
