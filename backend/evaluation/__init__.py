"""Evaluation harness: the study's comparison (extreme points vs SAM boxes vs GrabCut) on COCO-format data."""
