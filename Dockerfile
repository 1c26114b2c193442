# Placeholder until the image is built (see the container image issue): the appliance image will install the
# project as a wheel on an openEuler + CANN + Python 3.11 base and run `vms serve`.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
CMD ["vms", "serve"]
