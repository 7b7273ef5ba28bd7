#!/bin/sh
echo "script from the server"
